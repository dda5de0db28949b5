"""
C{smartmeter-emulator}: serve a virtual Wi-SUN module and smart meter on a pty.

    smartmeter-emulator --link /tmp/sm-emu [--dialect standard|dse] [--echo on|off]
        [--wopt hex|bin] [--id ID --password PW] [--time-scale F] [--loss P] [--seed N] ...

Creates a pty, makes C{--link} a symlink to its slave, prints the path and
serves until SIGTERM or SIGINT, then removes the link and exits 0.  Point any
B-route client at the path as if it were C{/dev/ttyACM0}.

Without C{--id}/C{--password} the meter accepts the defaults
C{00112233445566778899AABBCCDDEEFF} and C{0123456789AB}.  Neither the ID nor
the password is ever printed or logged.  C{--truth-log PATH} appends one JSON
object per property value the meter answered (time, TID, EPC, decoded value),
so a benchmark can check that a client never reported a wrong value.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Optional

from smartmeter_tx import __version__
from smartmeter_tx.emulator.device import DEFAULT_ID, DEFAULT_PASSWORD, OPTIONS, start_emulator
from smartmeter_tx.emulator.device import config_from_options
from smartmeter_tx.errors import ArgumentError

__all__ = ["main", "build_parser"]


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad argument is one line on stderr and exit code 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="smartmeter-emulator",
        description="Serve a virtual Wi-SUN module (SKSTACK IP) and low-voltage smart meter "
                    "(ECHONET Lite 0x028801) on a pty.",
        epilog=f"Default credentials: ID {DEFAULT_ID}, password {DEFAULT_PASSWORD}.  Numbers "
               "marked HEX are hexadecimal like SK register values.  Times are in device "
               "seconds, multiplied by --time-scale.")
    parser.add_argument("--version", action="version",
                        version=f"%(prog)s (smartmeter_tx) {__version__}")
    parser.add_argument("--link", metavar="PATH",
                        help="make PATH a symlink to the pty slave (default: just print the slave)")
    parser.add_argument("--truth-log", metavar="PATH",
                        help="append the ground truth as JSON lines to PATH")
    parser.add_argument("--verbose", action="store_true", help="log emulator events to stderr")
    for name, option in OPTIONS.items():
        parser.add_argument("--" + name, dest="opt_" + option.attr, metavar=option.metavar,
                            help=option.help)
    return parser


def main(argv: Optional[list] = None) -> int:
    """
    Run the command.  Returns (and exits with) 0 after SIGTERM/SIGINT, 2 on
    bad arguments.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    items = []
    for name, option in OPTIONS.items():
        value = getattr(args, "opt_" + option.attr)
        if value is not None:
            items.append((name, value))
    try:
        config = config_from_options(items)
    except ArgumentError as e:
        parser.error(str(e))
    from twisted.internet import reactor
    truth = None
    if args.truth_log:
        try:
            truth = open(args.truth_log, "a", encoding="utf-8")
        except OSError as e:
            parser.error(f"cannot open truth log: {e.strerror}")
    try:
        handle = start_emulator("emulator:", reactor, link=args.link, config=config)
    except (ArgumentError, OSError) as e:
        parser.error(str(e))
    if truth is not None:
        def write_truth(record):
            truth.write(json.dumps(record.to_json()) + "\n")
            truth.flush()
        handle.emulator.truth_sinks.append(write_truth)
    if args.verbose:
        from twisted.logger import globalLogBeginner, textFileLogObserver
        globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stderr)])
    print(handle.path, flush=True)
    reactor.addSystemEventTrigger("before", "shutdown", handle.stop)
    reactor.run()  # installs SIGINT/SIGTERM handlers that stop the reactor
    if truth is not None:
        truth.close()
    return 0


def _entry() -> None:  # pragma: no cover
    sys.exit(main())


if __name__ == "__main__":  # pragma: no cover
    _entry()
