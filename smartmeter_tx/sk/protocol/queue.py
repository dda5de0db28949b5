"""
The command side of L{smartmeter_tx.sk.protocol.SKStackProtocol}: one
command on the wire at a time, the lines that answer it, its timeout, and the
resynchronisation after an abandoned one.

After a command is abandoned (timed out or cancelled) before its OK, its late
answer may still be on the way, and with echo off nothing tells it apart from
the next command's.  So before the next command a resync is sent, with echo on
or off: a command whose result line the abandoned one cannot produce
(L{SYNC_COMMANDS}); every answer line up to that result is dropped, and the
queue resumes after the OK that follows.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Optional, TypeVar, Union

from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from smartmeter_tx.sk import commands
from smartmeter_tx.sk import values as V
from smartmeter_tx.sk.parse import Assembled
from smartmeter_tx.sk.errors import SKCommandError, SKDisconnected, SKEventError, SKTimeoutError

__all__ = ["CommandQueue", "Reply", "SYNC_COMMANDS"]

_T = TypeVar("_T")


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
    lines: list[Assembled] = field(default_factory=list)
    events: list[V.Event] = field(default_factory=list)
    pandescs: list[V.PanDesc] = field(default_factory=list)
    ok: Optional[V.Ok] = None
    final: object = None

    def first(self, kind: type[_T]) -> Optional[_T]:
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

    def __init__(self, command: commands.Command, deferred: Optional[defer.Deferred[Reply]],
                 sync: Optional[type] = None) -> None:
        self.command = command
        self.deferred = deferred
        self.reply = Reply(command)
        self.echo_seen = False
        self.timer: Optional[IDelayedCall] = None
        self.sync = sync
        self.result_seen = False


#: Resync commands and the result line that ends the stale answers: serial
#: only (no radio), on every module and in both dialects.  The second serves
#: when the first is itself among the abandoned commands, whose late result
#: line would otherwise pass for the resync's.
SYNC_COMMANDS = ((commands.sk_ver, V.Ver), (commands.sk_info, V.Info))


class CommandQueue:
    """
    The commands of one connection to a module, and what its lines mean to
    the command in flight.

    The protocol hands it every parsed line that may answer a command
    (L{echo_line}, L{ok}, L{fail}, L{result}, L{collect_event},
    L{end_on_event}, L{collect_pandesc}); the queue calls back to write.

    @ivar echo: whether the module echoes commands: C{True}, C{False}, or
        C{None} while unknown (at start, after a timeout or SKRESET).
    """

    log = Logger()

    def __init__(self, clock: IReactorTime, send: Callable[[commands.Command], None],
                 idle: Callable[[], None], stop_raw: Callable[[], None],
                 drain: Callable[[], None], learned_mode: Callable[[str], None]) -> None:
        """
        @param send: write a command now (the wire's line ends set for it).
        @param idle: no command is in flight any more (normal line ends).
        @param stop_raw: the command in flight timed out: give up a binary
            payload being read, without parsing what follows yet.
        @param drain: parse what the reader holds (after a timeout).
        @param learned_mode: ROPT or WOPT told the ERXUDP output mode
            (C{"hex"} or C{"binary"}).
        """
        self._clock = clock
        self._send = send
        self._idle = idle
        self._stop_raw = stop_raw
        self._drain = drain
        self._learned_mode = learned_mode
        self._queue: deque[_Pending] = deque()
        self._current: Optional[_Pending] = None
        self._unechoed_timeouts = 0
        # Names of the commands abandoned since the stream was last known to
        # be in step; non-empty means a resync must precede the next command.
        self._abandoned: set[str] = set()
        self.echo: Optional[bool] = None

    @property
    def busy(self) -> bool:
        """Whether a command is in flight or queued."""
        return self._current is not None or bool(self._queue)

    @property
    def in_flight(self) -> Optional[str]:
        """The name of the command on the wire, or C{None}."""
        return self._current.command.name if self._current is not None else None

    def submit(self, command: commands.Command) -> defer.Deferred[Reply]:
        """
        Queue C{command}; it is written once every earlier command completed.

        @return: see L{smartmeter_tx.sk.protocol.SKStackProtocol.command}.
        """
        d: defer.Deferred[Reply] = defer.Deferred(self._cancel)
        self._queue.append(_Pending(command, d))
        self._issue()
        return d

    def lost(self, reason: Failure) -> None:
        """
        The link is gone: fail the command in flight and every queued one
        with L{SKDisconnected}.
        """
        pending = ([self._current] if self._current else []) + list(self._queue)
        self._current = None
        self._queue.clear()
        for p in pending:
            if p.timer is not None and p.timer.active():
                p.timer.cancel()
            if p.deferred is not None:
                p.deferred.errback(SKDisconnected(p.command.name, reason))

    # -- what the module's lines mean to the command in flight -------------------

    def collect_event(self, event: V.Event) -> None:
        """Record C{event} in the reply when the command collects it."""
        p = self._current
        if p is not None and event.num in p.command.completion.collect_events:
            p.reply.events.append(event)

    def end_on_event(self, event: V.Event) -> None:
        """After its OK, end the command in flight if C{event} ends it."""
        p = self._current
        if p is not None and p.reply.ok is not None:
            c = p.command.completion
            if event.num in c.success_events:
                self._succeed(p, event)
            elif event.num in c.failure_events:
                self._fail(p, SKEventError(p.command.name, event))

    def collect_pandesc(self, desc: V.PanDesc) -> None:
        """Record C{desc} in the reply of a scan."""
        p = self._current
        if p is not None and p.command.completion.collect_pandesc:
            p.reply.pandescs.append(desc)

    def echo_line(self, echo: V.Echo) -> None:
        p = self._current
        if p is not None and not p.echo_seen and p.command.is_echo(echo):
            p.echo_seen = True
            # Only the echo of our own command proves echo is on: a stray line
            # that merely looks like one must not make us ignore real answers.
            self.echo = True
            self._unechoed_timeouts = 0
        else:
            self.log.debug("ignoring an echo that is not the command in flight")

    def ok(self, ok: V.Ok) -> None:
        p = self._end_ok(ok)
        if p is None:
            return
        p.reply.ok = ok
        if not p.command.completion.success_events:
            self._succeed(p, ok)

    def fail(self, fail: V.Fail) -> None:
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

    def result(self, value: Assembled) -> None:
        """A result line (L{V.Ver}, L{V.Info}, an L{V.Address}, ...)."""
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

    def _end_ok(self, value: Union[V.Ok, V.Fail]) -> Optional[_Pending]:
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

    # -- the queue -----------------------------------------------------------------

    def _issue(self) -> None:
        if self._current is not None or not self._queue:
            return
        p = self._resync() if self._abandoned else self._queue.popleft()
        self._current = p
        p.timer = self._clock.callLater(p.command.timeout, self._timed_out, p)
        self._send(p.command)

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

        An abandoned C{SKSREG SFE} may have switched echo all the same (only
        its OK went missing): echo is unknown until the next line tells.
        """
        if p.sync is not None or not (p.command.completion.ok and p.reply.ok is not None):
            self._abandoned.add(p.command.name)
        if p.command.name == "SKSREG" and p.command.args[:1] == ("SFE",):
            self.echo = None

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
        self._stop_raw()
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
                assert waiting.deferred is not None  # a resync is never queued
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
            self._idle()
        self._issue()

    def _succeed(self, p: _Pending, final: object) -> None:
        p.reply.final = final
        if p.sync is not None:
            self._synced(p)
            return
        self._learn(p)
        self._finish(p)
        assert p.deferred is not None  # only a resync has no caller
        p.deferred.callback(p.reply)

    def _fail(self, p: _Pending, error: Exception) -> None:
        self._finish(p)
        assert p.deferred is not None  # a resync never fails: it ends in _synced
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
            self._learned_mode("binary" if p.reply.ok.param == "00" else "hex")
        elif cmd.name == "WOPT":
            self._learned_mode("binary" if cmd.args[0] == "00" else "hex")
