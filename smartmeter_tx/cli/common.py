"""
What the one-shot commands (C{mackerel-plugin-smartmeter},
C{smartmeter-history}, C{check-smartmeter}) share: their exit codes, their
usage errors and one-line diagnostics, their logging, running under
C{task.react}, opening the module for one run (L{with_meter}), and the one
client of the service's HTTP endpoints (L{fetch_service}).

Twisted is imported inside the functions that need it: the C{--service}
paths read one JSON document and should not pay for the reactor's imports.
"""

from __future__ import annotations

import argparse
from typing import Optional, cast

from smartmeter_tx.cli import options as O
from smartmeter_tx.cli.options import DeviceError
from smartmeter_tx.errors import ArgumentError, SmartMeterError

__all__ = [
    "EXIT_OK", "EXIT_BUG", "EXIT_USAGE", "EXIT_DEVICE", "EXIT_AUTH", "EXIT_NOT_FOUND",
    "EXIT_TIMEOUT", "EXIT_NO_READING", "DEFAULT_SERVICE", "UsageError", "Parser", "say",
    "start_logging", "exit_code", "react", "with_meter", "save_link", "service_base",
    "fetch_service", "run_blocking", "EXIT_INTERRUPTED", "ask_local_service", "same_device",
    "busy_hint", "why_unreachable", "timeout_hint",
]

EXIT_OK = 0


EXIT_BUG = 1


EXIT_USAGE = 2


EXIT_DEVICE = 3


EXIT_AUTH = 4


EXIT_NOT_FOUND = 5


EXIT_TIMEOUT = 6


EXIT_NO_READING = 7


#: Where the service listens by default (tap.py's --http default): a plugin
#: that finds the serial port held reads from it instead.
DEFAULT_SERVICE = "http://127.0.0.1:9580"


class UsageError(ArgumentError):
    """A command-line mistake; printed as one line, exit code 2."""


class Parser(argparse.ArgumentParser):
    """argparse with C{--version}; a bad argument raises L{UsageError}."""

    def __init__(self, *args, **kwargs) -> None:
        from smartmeter_tx import __version__
        super().__init__(*args, **kwargs)
        self.add_argument("--version", action="version",
                          version=f"%(prog)s (smartmeter_tx) {__version__}")

    def error(self, message):
        raise UsageError(message)


def say(stream, message: str, program: str = "mackerel-plugin-smartmeter") -> None:
    stream.write(f"{program}: {message}\n")
    stream.flush()


def start_logging(verbosity: int, stream) -> None:
    """Log to C{stream} through L{log_observer}, from now on."""
    from twisted.logger import globalLogBeginner
    globalLogBeginner.beginLoggingTo([log_observer(verbosity, stream)],
                                     redirectStandardIO=False, discardBuffer=True)


def log_observer(verbosity: int, stream):
    """
    The one-shot commands' log: C{[level] text} lines on C{stream} at
    C{--verbosity} and above (0 critical, 1 warnings, 2 info, 3 debug).
    """
    from twisted.logger import (
        FilteringLogObserver, ILogObserver, LogLevel, LogLevelFilterPredicate, formatEvent,
    )
    level = {0: LogLevel.critical, 1: LogLevel.warn, 2: LogLevel.info, 3: LogLevel.debug}
    predicate = LogLevelFilterPredicate(defaultLogLevel=level[verbosity])

    def observer(event):
        if event.get("log_format") == "Main loop terminated.":
            return  # the reactor's own line at every end: not news to a user
        text = formatEvent(event)
        if "log_failure" in event and verbosity >= 3:
            text += "\n" + event["log_failure"].getTraceback()
        stream.write(f"[{event.get('log_level').name}] {text}\n")

    # A callable of one event is an observer (Twisted casts its own the same way).
    return FilteringLogObserver(cast(ILogObserver, observer), [predicate])


#: Seconds after which a meter refuses a wrong B-route ID or password (EVENT 24).
REFUSAL_TAKES = 40


def timeout_hint(error: BaseException, budget: float) -> str:
    """
    What a run that timed out while authenticating could not see: the meter
    answers a wrong ID or password only after about L{REFUSAL_TAKES}
    seconds, so in a shorter run that is the likely cause.
    """
    from smartmeter_tx.errors import StepTimeout
    from smartmeter_tx.session.join import AUTHENTICATING
    if not isinstance(error, StepTimeout) or error.step != AUTHENTICATING:
        return ""
    if budget < REFUSAL_TAKES + 10:
        return (f"; the meter refuses a wrong B-route ID or password only after about "
                f"{REFUSAL_TAKES} s, so that is the likely cause: check them, or run once "
                "with --timeout 55 to see its answer")
    return "; the meter did not answer the join in time (radio trouble): move the module closer"


def exit_code(error: BaseException) -> int:
    from smartmeter_tx import errors as E
    from smartmeter_tx.sk.errors import SKDisconnected
    if isinstance(error, ArgumentError):
        return EXIT_USAGE
    if isinstance(error, (DeviceError, SKDisconnected)):
        return EXIT_DEVICE
    if isinstance(error, E.AuthenticationFailed):
        return EXIT_AUTH
    if isinstance(error, E.MeterNotFound):
        return EXIT_NOT_FOUND
    if isinstance(error, E.StepTimeout):
        return EXIT_TIMEOUT
    if isinstance(error, SmartMeterError):  # ReadFailed, RateLimited, SK errors
        return EXIT_NO_READING
    return EXIT_BUG


async def with_meter(reactor, args, rbid, password, environ, stderr, work, busy=None,
                     program: str = "mackerel-plugin-smartmeter") -> int:
    """
    Open the module named by C{args} (device, credentials, state file, link
    flags), run C{await work(client, budget, credentials, state_path)} within
    C{args.timeout}, save what the session learnt, close the port, and turn
    a failure into one stderr line and an exit code.  Shared by the one-shot
    commands.

    @param busy: C{await busy(error)} answers instead when another program
        holds the port (L{O.DeviceBusy}); without it that is exit 3.
    @return: the exit code (C{work}'s own on success).
    """
    from twisted.internet import defer

    from smartmeter_tx.sk.protocol import SKStackProtocol
    from smartmeter_tx.session.steps import Budget

    # A serial-only step the module did not answer (a lost byte) is sent again
    # once, within the run's time, rather than fail the run.
    budget = Budget(reactor, args.timeout, retries=1)
    proto = SKStackProtocol(clock=reactor)
    redactor = O.redactor_for(rbid, password)
    if args.verbosity >= 3:
        proto.transcript = lambda direction, text: stderr.write(f"{direction} {text}\n")
    device = None
    client = None
    state_path: Optional[str] = None
    try:
        device = O.start_device(args.device, reactor)
        if device.default_credentials:
            rbid = rbid or device.default_credentials[0]
            password = password or device.default_credentials[1]
        credentials = O.make_credentials(rbid, password)
        config, state_path = O.session_config(
            args.device, args.state_file or args.tempfile, credentials, O.dialect_for(args.dse),
            args.channel, args.panid, args.ipaddr, environ)
        try:
            O.open_serial(proto, device.path, reactor)
        except O.DeviceBusy as e:
            if busy is None:
                raise
            return await busy(e)
        client = config.client(proto, reactor)
        code = await budget.bound(work(client, budget, credentials, state_path),
                                  "talking to the meter")
        save_link(state_path, client.link, stderr, program)
        return code
    except SmartMeterError as e:
        if client is not None:
            assert state_path is not None  # known before the client was made
            save_link(state_path, client.link, stderr, program)
        say(stderr, redactor.scrub(str(e)) + timeout_hint(e, args.timeout), program)
        return exit_code(e)
    finally:
        if client is not None:
            client.close()
        if proto.transport is not None and proto.connected_now:
            lost = proto.when_disconnected()
            proto.transport.loseConnection()
            # Let the port close (and the module see it) before we exit.
            lost.addTimeout(2, reactor)
            try:
                await lost
            except defer.TimeoutError:
                pass
        if device is not None:
            device.stop()


def service_base(text: str) -> str:
    """
    A C{--service} URL without its trailing slash.

    @raise UsageError: not an http(s) URL with a host and a valid port.
    """
    import urllib.parse

    url = text.strip().rstrip("/")
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # raises ValueError for a port that is not a number or out of range
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(f"--service must be an http:// URL such as http://127.0.0.1:9580, "
                         f"got {text!r}")
    return url


def fetch_service(url: str, timeout: float) -> tuple:
    """
    The one client of the service's HTTP endpoints (C{/latest}, C{/history}):
    a blocking GET with the standard library (no reactor: half the CPU time
    of the Twisted path).

    @return: C{(HTTP status, body bytes)}.
    @raise TimeoutError: no answer in C{timeout} seconds.
    @raise OSError: the service cannot be reached (C{http.client} errors too).
    """
    import http.client
    import urllib.parse

    parts = urllib.parse.urlsplit(url)
    assert parts.hostname is not None  # the URL is service_base's, or the default one
    cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    conn = cls(parts.hostname, parts.port, timeout=timeout)
    try:
        target = parts.path or "/latest"
        conn.request("GET", f"{target}?{parts.query}" if parts.query else target)
        response = conn.getresponse()
        return response.status, response.read()
    except http.client.HTTPException as e:
        raise OSError(f"bad HTTP answer: {e.__class__.__name__}") from None
    finally:
        conn.close()


def why_unreachable(error: OSError) -> str:
    """Why the service could not be reached, in words, never a bare class name."""
    why = error.strerror or str(error) or error.__class__.__name__
    if isinstance(error, ConnectionRefusedError):
        why += "; is twist smartmeter running, with this --http?"
    return why


def ask_local_service(timeout: float):
    """
    The local service's C{/latest} at L{DEFAULT_SERVICE}, blocking (call it on
    a thread): who holds a busy port?

    @return: C{(HTTP status, body bytes)}, or C{None} when nothing answers.
    """
    try:
        return fetch_service(DEFAULT_SERVICE.rstrip("/") + "/latest", timeout)
    except OSError:  # TimeoutError included
        return None


def same_device(body: bytes, device: str) -> bool:
    """Whether the service's /latest says it reads C{device} (symlinks resolved)."""
    import os

    from smartmeter_tx.model import parse_json_object

    theirs = (parse_json_object(body) or {}).get("device")
    if not isinstance(theirs, str):
        return False
    return theirs == device or os.path.realpath(theirs) == os.path.realpath(device)


def busy_hint(error, answer, device: str) -> str:
    """
    The one line for a port another program holds, given what the local
    service answered (L{ask_local_service}).
    """
    if answer is not None and same_device(answer[1], device):
        return (f"{error}: twist smartmeter reads it; ask it instead with "
                f"--service {DEFAULT_SERVICE}")
    return f"{error} (is twist smartmeter running? use --service URL)"


def save_link(path: str, link, stderr, program: str = "mackerel-plugin-smartmeter") -> None:
    from smartmeter_tx.session import state as S
    try:
        S.save_state(path, link)
    except OSError as e:
        say(stderr, f"warning: cannot write the state file {path}: {e.strerror}", program)


#: Exit statuses after SIGINT and SIGTERM (128 + the signal, as shells report).
EXIT_INTERRUPTED = {2: 130, 15: 143}


class Interrupted(BaseException):
    """SIGINT or SIGTERM arrived in a one-shot command that runs no reactor."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _interrupted(program: str, signum: int) -> int:
    import sys
    say(sys.stderr, "interrupted", program)
    return EXIT_INTERRUPTED.get(signum, 128 + signum)


def react(main, program: str = "mackerel-plugin-smartmeter") -> None:
    """
    Run the coroutine C{main(reactor)} under C{task.react} and exit with the
    code it returns (the one-shot commands' entry points).

    SIGINT and SIGTERM cancel C{main}: its C{finally} clauses close the port
    (and stop an in-process emulator), then one line says "interrupted" and
    the exit status is 130 or 143.  A second signal stops the reactor.
    """
    import signal

    from twisted.internet import defer, task

    def _main(reactor):
        d = defer.Deferred.fromCoroutine(main(reactor))
        caught: list = []

        def handler(signum, frame):
            if caught:
                reactor.callFromThread(reactor.stop)
            else:
                caught.append(signum)
                reactor.callFromThread(d.cancel)

        def install():
            # After the reactor's own handlers (which would stop it and close
            # the port under the command, a "serial link closed" fault).
            for signum in (signal.SIGINT, signal.SIGTERM):
                signal.signal(signum, handler)

        def done(result):
            if caught:
                raise SystemExit(_interrupted(program, caught[0]))
            return result

        reactor.callWhenRunning(install)
        return d.addBoth(done).addCallback(_exit)

    def _exit(code):
        if code:
            raise SystemExit(code)

    task.react(_main)


def run_blocking(function, program: str) -> int:
    """
    C{function()} for a one-shot path without a reactor (C{--service}, the
    check): SIGINT and SIGTERM end it with one line and status 130 or 143.

    @return: C{function}'s exit code.
    """
    import signal

    def handler(signum, frame):
        raise Interrupted(signum)

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, handler)
    try:
        return function()
    except Interrupted as e:
        return _interrupted(program, e.signum)
