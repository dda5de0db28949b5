"""
The one table of the options that reach the meter, and its two readers: the
one-shot commands' argparse parsers (L{add_to_parser}) and C{twist
smartmeter}'s C{usage.Options} (L{usage_parameters}, L{checked_values}).

Each option is declared once, with its help and its value check
(L{smartmeter_tx.cli.options}); a check raises L{ArgumentError} with a
one-line message, which each front end reports as its own usage error.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any, Callable, Optional

from smartmeter_tx.cli import options as O
from smartmeter_tx.cli.options import ENV_ID, ENV_PASSWORD
from smartmeter_tx.errors import ArgumentError

__all__ = ["MeterOption", "METER_OPTIONS", "HA_OPTIONS", "add_to_parser", "add_oneshot_options",
           "usage_parameters", "checked_values", "bool_value", "argparse_type"]


@dataclass(frozen=True)
class MeterOption:
    """
    @ivar name: the long name, without dashes (argparse also takes Go's
        single-dash spelling).
    @ivar parse: the value check, or C{None} for a plain string.
    @ivar boolean: a switch: a flag for C{twist}; for the Go-compatible
        one-shot commands a flag that may take a Go-style value (C{--dse=false}).
    """

    name: str
    metavar: str
    help: str
    parse: Optional[Callable[[str], Any]] = None
    boolean: bool = False

    @property
    def dest(self) -> str:
        return self.name.replace("-", "_")


METER_OPTIONS = (
    MeterOption("device", "PATH", "serial device of the Wi-SUN module, e.g. /dev/ttyUSB0 or a "
                "/dev/serial/by-id/ path, or 'emulator:' for the built-in emulator",
                O.parse_device),
    MeterOption("id", "ID", f"B-route ID (32 characters; prefer ${ENV_ID})"),
    MeterOption("password", "PW", f"B-route password (prefer ${ENV_PASSWORD} or "
                "--password-file)"),
    MeterOption("password-file", "FILE", "file holding the B-route password (first line)"),
    MeterOption("channel", "CH", "the meter's channel in hex (21-3C), as EPANDESC prints it; "
                "narrows the scan", O.parse_channel),
    MeterOption("panid", "PANID", "the meter's PAN ID (4 hex digits)", O.parse_panid),
    MeterOption("ipaddr", "IPV6", "the meter's link-local IPv6 address (full form)",
                O.parse_ipaddr),
    MeterOption("dse", "BOOL", "force the dual-stack-edition SK dialect (default: detected)",
                boolean=True),
    MeterOption("state-file", "PATH", "where to remember the meter's channel, PAN ID and "
                "address (default under $MACKEREL_PLUGIN_WORKDIR or "
                "~/.local/state/smartmeter_tx)"),
)


#: Home Assistant's statistics (C{smartmeter-history} and C{twist smartmeter}).
HA_OPTIONS = (
    MeterOption("ha-url", "URL", "import the meter's 30-minute record into Home Assistant's "
                "long-term statistics at this address, e.g. http://homeassistant.local:8123 "
                "(needs the [homeassistant] extra)"),
    MeterOption("ha-token-file", "FILE", f"file holding a long-lived access token of an "
                f"admin user (first line; or ${O.ENV_HA_TOKEN})"),
)


def bool_value(text: Optional[str]) -> bool:
    """A Go-style boolean flag value for argparse; C{None} (the bare flag) is true."""
    return argparse_type(O.parse_bool)(text)


def argparse_type(parse: Callable[[str], Any]):
    """An argparse type from a value check of L{O} (its message, not argparse's)."""
    def convert(text):
        try:
            return parse(text)
        except ArgumentError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
    convert.__name__ = parse.__name__
    return convert


def add_to_parser(parser: argparse.ArgumentParser, table=METER_OPTIONS):
    """
    Add the options of C{table} to C{parser}, each also in Go's single-dash
    spelling.

    @return: C{opt(name, **kw)}, to add a command's own options the same way.
    """
    def opt(name, **kw):
        parser.add_argument("--" + name, "-" + name, **kw)

    for option in table:
        if option.boolean:
            opt(option.name, type=bool_value, nargs="?", const=True, default=None,
                metavar=option.metavar, help=option.help)
        elif option.parse is not None:
            opt(option.name, dest=option.dest, type=argparse_type(option.parse),
                metavar=option.metavar, help=option.help)
        else:
            opt(option.name, dest=option.dest, metavar=option.metavar, help=option.help)
    return opt


def add_oneshot_options(parser: argparse.ArgumentParser, timeout_help: str):
    """
    The meter options and those of every one-shot command: verbosity, the
    run's time budget and the Go plugin's C{-tempfile} and C{-debug}.

    @return: see L{add_to_parser}.
    """
    opt = add_to_parser(parser)
    opt("tempfile", metavar="PATH", help="accepted for compatibility; used as the state "
        "file when --state-file is not given")
    opt("verbosity", type=int, default=1, choices=range(0, 4), metavar="N",
        help="0 quiet, 1 warnings (default), 2 info, 3 full SK transcript (secrets redacted)")
    opt("debug", type=bool_value, nargs="?", const=True, default=False, metavar="BOOL",
        help="same as --verbosity 3 (compatibility)")
    opt("timeout", type=argparse_type(O.parse_seconds), default=None, metavar="SECONDS",
        help=timeout_help)
    return opt


def usage_parameters(table=METER_OPTIONS) -> tuple:
    """
    @return: C{(optFlags, optParameters)} entries of C{table} for a
        C{usage.Options}; values stay text until L{checked_values}.
    """
    flags = [[o.name, None, o.help] for o in table if o.boolean]
    parameters = [[o.name, None, None, o.help] for o in table if not o.boolean]
    return flags, parameters


def checked_values(values: dict, table=METER_OPTIONS) -> dict:
    """
    The values a C{usage.Options} took for the options of C{table}, checked
    and converted (the options themselves keep the text given).

    @return: C{{option name: value}}; C{None} where an option was not given.
    @raise ArgumentError: one line naming the option.
    """
    checked = {}
    for option in table:
        value = values.get(option.name)
        if option.parse is not None and value is not None:
            try:
                value = option.parse(value)
            except ArgumentError as e:
                message = str(e)
                raise ArgumentError(message if message.startswith("--")
                                    else f"--{option.name}: {message}") from None
        checked[option.name] = value
    return checked
