"""
C{mackerel-plugin-smartmeter}: the one-shot Mackerel agent plugin.

Flag-compatible with the original Go plugin (each flag also in Go's single-dash
spelling, e.g. C{-device}).  Prints metric lines on stdout and nothing else;
diagnostics go to stderr, one line per problem, never with a secret in them.

Exit codes::

    0  metrics printed (or meta / scan output)
    2  bad command line or configuration
    3  the serial device cannot be opened (missing, permission) or vanished
    4  the meter refused authentication (EVENT 24: wrong ID or password)
    5  no meter found by the scan
    6  a step timed out (the message names it)
    7  the meter or module did not deliver a reading (lost frames, rate limit)
    1  anything else (a bug: please report it)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Optional

from smartmeter_tx.cli import common
from smartmeter_tx.cli import options as O
from smartmeter_tx.cli.common import (
    EXIT_DEVICE, EXIT_OK, EXIT_TIMEOUT, EXIT_USAGE, EXIT_NO_READING, Parser,
    UsageError, fetch_service, react, save_link, say, service_base, start_logging, with_meter,
)
from smartmeter_tx.cli.meteropts import add_oneshot_options, argparse_type, bool_value
from smartmeter_tx.cli.options import ENV_ID, ENV_PASSWORD
from smartmeter_tx.errors import ArgumentError
from smartmeter_tx.outputs import mackerel

# Twisted is imported inside the functions that need it: the --service path
# reads one JSON document and should not pay for the reactor's imports.

PROGRAM = "mackerel-plugin-smartmeter"
#: Seconds of a normal run (mackerel-agent kills plugins at 30 s) and of --scan.
DEFAULT_TIMEOUT = 25.0
SCAN_TIMEOUT = 120.0

__all__ = ["main", "run", "parse_args", "build_parser", "service_output",
           "from_service_blocking"]


def build_parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="mackerel-plugin-smartmeter", allow_abbrev=False,
        description="Read instantaneous power and current from a Japanese smart meter over "
                    "the Wi-SUN B-route and print them for mackerel-agent.",
        epilog=f"The B-route ID and password can come from ${ENV_ID} / ${ENV_PASSWORD} or "
               "--password-file instead of the command line.")
    opt = add_oneshot_options(p, "total time budget of the run (default 25, below "
                             "mackerel-agent's 30; 120 with --scan, which may need long scans)")
    opt("scan", type=bool_value, nargs="?", const=True, default=False, metavar="BOOL",
        help="find the meter, print what was found and the mackerel-agent.conf block")
    opt("metric-key-prefix", dest="prefix", default="smartmeter", metavar="PREFIX",
        help="metric key prefix (default: smartmeter)")
    opt("energy", type=bool_value, nargs="?", const=True, default=False, metavar="BOOL",
        help="also print cumulative energy (kWh) bought and sold")
    opt("service", metavar="URL", help="read the latest reading from a running "
        "'twist smartmeter' service instead of the serial port")
    opt("max-age", dest="max_age", type=argparse_type(O.parse_seconds), default=120.0, metavar="SECONDS",
        help="with --service: print nothing if the reading is older than this")
    return p


def parse_args(argv):
    """
    Parse the command line and fill in defaults that depend on other flags.

    @raise UsageError: a bad command line.
    """
    args = build_parser().parse_args(argv)
    if args.timeout is None:
        args.timeout = SCAN_TIMEOUT if args.scan else DEFAULT_TIMEOUT
    if args.debug:
        args.verbosity = 3
    return args


async def run(reactor, argv, environ=os.environ, stdout=None, stderr=None) -> int:
    """
    The whole one-shot run.

    @return: the exit code.
    """
    stderr = stderr or sys.stderr
    try:
        args = parse_args(argv)
    except ArgumentError as e:
        say(stderr, str(e))
        return EXIT_USAGE
    return await run_parsed(reactor, args, environ, stdout, stderr)


async def run_parsed(reactor, args, environ=os.environ, stdout=None, stderr=None) -> int:
    """
    L{run} for a command line already parsed by L{parse_args}.

    @return: the exit code.
    """
    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr
    try:
        prefix = mackerel.check_prefix(args.prefix)
        if environ.get("MACKEREL_AGENT_PLUGIN_META"):
            stdout.write(mackerel.format_meta(prefix, args.energy))
            return EXIT_OK
        if args.service:
            from twisted.internet import threads
            # The one --service client, on a thread: the reactor may be the
            # one serving the answer (tests run the service in-process).
            return await threads.deferToThreadPool(
                reactor, reactor.getThreadPool(), from_service_blocking, args, prefix, stdout,
                stderr)
        O.require_device(args.device)
        if args.timeout <= 0:
            raise UsageError("--timeout must be positive")
        rbid, password = O.read_secrets(args.id, args.password, args.password_file, environ)
    except ArgumentError as e:
        say(stderr, str(e))
        return EXIT_USAGE
    return await _read_meter(reactor, args, prefix, rbid, password, environ, stdout, stderr)


async def _read_meter(reactor, args, prefix, rbid, password, environ, stdout, stderr) -> int:
    async def work(client, budget, credentials, state_path):
        if args.scan:
            if credentials is None:
                raise UsageError("--scan needs the B-route ID and password")
            found = await _scan(client, budget, state_path, stderr)
            stdout.write(found + "\n".join(agent_conf(
                _command_path(), args, client.link, credentials.rbid,
                _password_source(args, environ), os.path.abspath(state_path))) + "\n")
            stdout.flush()
            return EXIT_OK
        reading = await client.read_values(energy=args.energy, budget=budget)
        lines = mackerel.format_metrics(prefix, reading, int(reactor.seconds()), args.energy)
        # All or nothing: the lines are written in one go after the reading.
        stdout.write("".join(line + "\n" for line in lines))
        stdout.flush()
        return EXIT_OK

    def busy(error):
        return _port_in_use(reactor, error, args, prefix, stdout, stderr)

    return await with_meter(reactor, args, rbid, password, environ, stderr, work, busy)


def _service_url(args) -> str:
    url = service_base(args.service)
    return url if url.endswith("/latest") else url + "/latest"


def service_output(status: int, body: bytes, now: float, args,
                   prefix: str) -> tuple[int, list[str], Optional[str]]:
    """
    Turn the service's C{/latest} answer into metric lines.  Pure.

    @return: C{(exit code, lines, message)}; C{message} is for stderr or C{None}.
    """
    import json
    import math

    from smartmeter_tx.model import Reading

    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        return EXIT_NO_READING, [], "the service did not answer with JSON"
    if status != 200 or not isinstance(data, dict) or "time" not in data:
        if status == 503 and isinstance(data, dict):
            # The service is up without a reading: say why, and what holds it up.
            cause = data.get("cause")
            detail = [f"{key} {data[key]}" for key in ("link", "held")
                      if isinstance(data.get(key), str)]
            return EXIT_NO_READING, [], "the service has no reading yet" + (
                f": {cause}" if isinstance(cause, str) else "") + (
                f" ({'; '.join(detail)})" if detail else "")
        why = data.get("error") if isinstance(data, dict) else None
        return EXIT_NO_READING, [], f"the service answered HTTP {status} without a reading" + (
            f" ({why})" if isinstance(why, str) else "")
    try:
        when = float(data["time"])
        energy_time = None if data.get("energy_time") is None else float(data["energy_time"])
        if not math.isfinite(when) or energy_time is not None and not math.isfinite(energy_time):
            raise ValueError("not a finite time")
    except (TypeError, ValueError):
        return EXIT_NO_READING, [], "the service's answer has no valid time"
    age = now - when
    if age > args.max_age:
        return (EXIT_NO_READING, [],
                f"the service's latest reading is {age:.0f} s old (--max-age {args.max_age:g})")
    reading = Reading.from_record(data, Reading.INSTANT_FIELDS)
    lines = mackerel.format_metrics(prefix, reading, int(when))
    if args.energy and energy_time is not None:
        energy = Reading.from_record(data, Reading.ENERGY_FIELDS)
        lines += mackerel.format_metrics(prefix, energy, int(energy_time), energy=True)
    return EXIT_OK, lines, None


def _print_service(code, lines, message, url, stdout, stderr, verbosity: int = 1) -> int:
    if message:
        say(stderr, f"{message} ({url})")
    if lines and verbosity >= 2:  # as start_logging writes an info line
        stderr.write(f"[info] read from the service at {url} over HTTP, not from the module\n")
    stdout.write("".join(line + "\n" for line in lines))
    stdout.flush()
    return code


def from_service_blocking(args, prefix, stdout, stderr) -> int:
    """
    The --service path: print the running service's latest reading.

    @return: the exit code.
    """
    import time

    try:
        url = _service_url(args)
    except UsageError as e:
        say(stderr, str(e))
        return EXIT_USAGE
    try:
        status, body = fetch_service(url, args.timeout)
    except TimeoutError:
        say(stderr, f"timed out while asking the service at {url}")
        return EXIT_TIMEOUT
    except OSError as e:
        say(stderr, f"cannot reach the service at {url}: {common.why_unreachable(e)}")
        return EXIT_DEVICE
    return _print_service(*service_output(status, body, time.time(), args, prefix),
                          url, stdout, stderr, args.verbosity)


def _port_in_use(reactor, error, args, prefix, stdout, stderr):
    """
    The serial port is held by another program: if it is the service,
    answering at its default local endpoint and reading this very device,
    print its reading exactly as C{--service} would; else say so in one line.

    @return: a Deferred firing with the exit code.
    """
    import time

    from twisted.internet import threads

    url = common.DEFAULT_SERVICE.rstrip("/") + "/latest"

    def answered(result):
        if result is None or not common.same_device(result[1], args.device.text):
            say(stderr, common.busy_hint(error, result, args.device.text))
            return EXIT_DEVICE
        status, body = result
        return _print_service(*service_output(status, body, time.time(), args, prefix),
                              url, stdout, stderr, args.verbosity)

    return threads.deferToThreadPool(reactor, reactor.getThreadPool(), common.ask_local_service,
                                     min(args.timeout, 3.0)).addCallback(answered)


def _command_path() -> str:
    """
    The absolute path of this command, for the mackerel-agent.conf block:
    mackerel-agent runs plugins with its own PATH, which rarely holds a venv's
    bin/.
    """
    import shutil

    name = "mackerel-plugin-smartmeter"
    beside = os.path.join(os.path.dirname(os.path.abspath(sys.executable)), name)
    if os.access(beside, os.X_OK):
        return beside  # the venv (or prefix) of the interpreter running us
    found = shutil.which(name)
    return os.path.abspath(found) if found else name


async def _scan(client, budget, state_path, stderr) -> str:
    """
    Find the meter, save where it is; the scan's progress on stderr (a scan
    of every channel at each duration takes about a minute).

    @return: the lines that say what was found.
    """
    client.joiner.discovery.progress = lambda text: say(stderr, text)
    desc = await client.joiner.locate(budget)
    save_link(state_path, client.link, stderr)
    link = client.link
    return "\n".join([
        "Found the smart meter:",
        f"  channel   {link.channel:02X} (decimal {link.channel})",
        f"  PAN ID    {link.pan_id:04X}",
        f"  MAC       {link.mac}",
        f"  IPv6      {link.ipaddr}",
        f"  LQI       {desc.lqi:02X} ({desc.rssi_dbm:.1f} dBm)",
        f"  dialect   {link.dialect}",
        f"Saved to {state_path}; the next runs skip the scan.",
        "", ""])


#: Where the mackerel-agent.conf block tells the user to put the password
#: when it was given on the command line (where it must not stay).
PASSWORD_FILE_HINT = "/etc/smartmeter/password"


def _password_source(args, environ) -> Optional[str]:
    """
    Where the password came from, as L{agent_conf} takes it: C{"file:PATH"}
    (absolute), C{"env"}, C{"argv"}, or C{None} (the emulator's own).
    """
    if args.password_file:
        return "file:" + os.path.abspath(args.password_file)
    if args.password:
        return "argv"
    if environ.get(ENV_PASSWORD):
        return "env"
    return None


def agent_conf(command: str, args, link, rbid: Optional[str],
               password_source: Optional[str], state_path: str) -> list:
    """
    The mackerel-agent.conf block for this meter, with the credentials from
    where the user keeps them: the same password file, or the environment;
    a placeholder only for what is not known, and never the password; and
    the state file the scan wrote, which mackerel-agent (another user, another
    environment) would not find by itself.  Pure.

    @return: the lines.
    """
    argv = [command, "--device", args.device.text, "--channel", f"{link.channel:02X}",
            "--ipaddr", link.ipaddr, "--state-file", state_path]
    env = {ENV_ID: rbid or "<your 32-digit B-route ID>"}
    notes = []
    if password_source is not None and password_source.startswith("file:"):
        argv += ["--password-file", password_source[5:]]
    elif password_source == "env":
        env[ENV_PASSWORD] = "<your 12-character B-route password>"
    elif password_source == "argv":
        argv += ["--password-file", PASSWORD_FILE_HINT]
        notes = [f"# Put the B-route password on the first line of {PASSWORD_FILE_HINT}",
                 "# (readable by mackerel-agent only): a command line is visible to all."]
    argv += ["--timeout", "55"]
    quoted = ", ".join(json.dumps(a) for a in argv)
    pairs = ", ".join(f"{json.dumps(k)} = {json.dumps(v)}" for k, v in env.items())
    return [
        "Add this to /etc/mackerel-agent/mackerel-agent.conf:",
        "",
        "[plugin.metrics.smartmeter]",
        f"command = [{quoted}]",
        f"env = {{ {pairs} }}",
        *notes,
        "# A join (first run, or after the meter dropped the session) can take longer",
        "# than mackerel-agent's default 30 s: give the plugin a minute.",
        "timeout_seconds = 60",
    ]


def main(argv=None) -> None:
    """
    Console-script entry point.
    """
    argv = sys.argv[1:] if argv is None else argv
    try:
        args = parse_args(argv)
    except ArgumentError as e:
        say(sys.stderr, str(e))
        raise SystemExit(EXIT_USAGE)
    if args.service and not os.environ.get("MACKEREL_AGENT_PLUGIN_META"):
        # No reactor at all on this path: one loopback GET.
        try:
            prefix = mackerel.check_prefix(args.prefix)
        except ArgumentError as e:
            say(sys.stderr, str(e))
            raise SystemExit(EXIT_USAGE)
        raise SystemExit(common.run_blocking(
            lambda: from_service_blocking(args, prefix, sys.stdout, sys.stderr), PROGRAM))
    start_logging(args.verbosity, sys.stderr)
    react(lambda reactor: run_parsed(reactor, args), PROGRAM)


