"""
C{check-smartmeter}: a Mackerel check plugin for the running C{twist
smartmeter} service.

It asks the service's C{/latest} (one loopback GET with the plugin's own
client, L{smartmeter_tx.cli.common.fetch_service}) and never opens the serial
port, so it is cheap and never takes the module from the service.  It prints
exactly one line, C{SmartMeter <STATUS>: <message>} (at most 1024
characters), and exits with the status mackerel-agent expects::

    0  OK        1  WARNING        2  CRITICAL        3  UNKNOWN

The decision itself is L{evaluate} (and L{interpret} for the HTTP answer):
pure functions of the answer, the time and the L{Limits}, without I/O.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import re
import sys
import time
from decimal import Decimal
from typing import Callable, Optional

from smartmeter_tx.cli import common
from smartmeter_tx.cli import options as O
from smartmeter_tx.cli.meteropts import argparse_type
from smartmeter_tx.errors import ArgumentError
from smartmeter_tx.model import amps_text

__all__ = ["OK", "WARNING", "CRITICAL", "UNKNOWN", "Limits", "evaluate", "interpret",
           "format_line", "build_parser", "parse_args", "run", "main"]

OK, WARNING, CRITICAL, UNKNOWN = 0, 1, 2, 3
STATUS_NAMES = {OK: "OK", WARNING: "WARNING", CRITICAL: "CRITICAL", UNKNOWN: "UNKNOWN"}

#: The checker name on the output line (mackerelio/checkers style).
NAME = "SmartMeter"
#: mackerel-agent keeps at most this many characters of a check's message.
MAX_LINE = 1024

PROGRAM = "check-smartmeter"


@dataclasses.dataclass(frozen=True)
class Limits:
    """
    The thresholds of a check.  Ages are seconds, currents amperes, power
    watts; C{None} switches a check off.
    """

    #: Age of the newest reading; C{None}: from the service's own interval
    #: (L{age_limits}).
    warning_age: Optional[float] = None
    critical_age: Optional[float] = None
    #: Age of the meter's last half-hourly fixed-time EA/EB push.
    warning_fixed_age: Optional[float] = 4200.0
    #: Rejoins in the last hour above this warn.
    warning_rejoins: Optional[int] = 3
    warning_current: Optional[float] = None
    critical_current: Optional[float] = None
    warning_power: Optional[float] = None
    critical_power: Optional[float] = None


class _Unreadable(ValueError):
    """The service's answer cannot be understood (UNKNOWN)."""


def _number(data: dict, key: str):
    """
    C{data[key]} as a finite number (int or Decimal), or C{None} when absent
    or null.

    @raise _Unreadable: present but not a finite number.
    """
    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, Decimal)):
        raise _Unreadable(f"the service's answer has a bad {key!r}")
    if not math.isfinite(value):
        raise _Unreadable(f"the service's answer has a bad {key!r}")
    return value


def _cause(data: dict) -> Optional[str]:
    """Why the service has no session (its last join's failure), when it says."""
    cause = data.get("cause")
    return cause if isinstance(cause, str) and cause else None


def _flag(data: dict, key: str) -> Optional[bool]:
    value = data.get(key)
    return value if isinstance(value, bool) else None


def _g(value) -> str:
    """A threshold or value as people write it: 30, 2.5, 4000."""
    return f"{value:g}" if isinstance(value, float) else str(value)


def evaluate(data: dict, now: float, limits: Limits = Limits()) -> tuple:
    """
    Judge one C{/latest} record (HTTP 200).  Pure: no I/O, no clock.

    Every check that fails adds a problem; the worst status wins, and the
    message lists the problems, then the values (absent ones left out,
    never shown as 0).

    Ages are taken on the service's own clock: the reading's C{age} as the
    service computed it (or C{now - time} from an older service without
    C{age}), and the EA/EB's age as C{time + age - fixed_time}; so a check
    run on another host with a skewed clock judges the same.

    A C{fixed_time} that is absent does not alarm: the service only knows it
    once the meter has pushed its first half-hourly EA/EB after the service
    started (up to 30 minutes), some meters never push it, and C{/latest}
    does not say how long the service has been up.  Only an EA/EB that did
    come and then stopped is reported.

    @param data: the parsed JSON object (numbers may be Decimal).
    @param now: the checker's time (epoch seconds), used only without C{age}.
    @return: C{(status, message)}.
    @raise _Unreadable: the record lacks a valid C{time}, or a field has the
        wrong type.
    """
    if not isinstance(data, dict):
        raise _Unreadable("the service's answer is not a JSON object")
    when = _number(data, "time")
    if when is None:
        raise _Unreadable("the service's answer has no time")
    when = float(when)
    age = _number(data, "age")
    age = float(now - when) if age is None else float(age)
    problems = _age_problems(data, when, age, limits) + _link_problems(data, limits)
    # Read in this order, so that the first malformed field is the one named.
    currents = [(phase, _number(data, f"current_{phase.lower()}_a")) for phase in ("R", "T")]
    power = _number(data, "power_w")
    problems += _load_problems(currents, power, contract_limits(data, limits))
    status = max((s for s, _ in problems), default=OK)
    return status, "; ".join([text for _, text in problems]
                             + [", ".join(_values(data, currents, power, age))])


#: The reading-age thresholds without -w/-c: so many of the service's polls
#: missed, and never less than at its default 30 s interval (120 s, 300 s).
WARNING_POLLS, CRITICAL_POLLS = 4, 10
DEFAULT_INTERVAL = 30.0


def age_limits(data: dict, limits: Limits) -> tuple:
    """
    The warning and critical ages for the reading in C{data}: those given,
    else four and ten of the service's polls (its C{interval} in
    C{/latest}), at least 120 and 300 s.  Pure.
    """
    interval = _number(data, "interval")
    interval = DEFAULT_INTERVAL if interval is None else max(float(interval), DEFAULT_INTERVAL)
    warning = (WARNING_POLLS * interval if limits.warning_age is None
               else limits.warning_age)
    critical = (CRITICAL_POLLS * interval if limits.critical_age is None
                else limits.critical_age)
    return warning, max(warning, critical) if limits.critical_age is None else critical


def _age_problems(data: dict, when: float, age: float, limits: Limits) -> list:
    """
    The poll loop's and the newest reading's ages, and the age of the
    meter's last EA/EB push, each as the service took it on its own clock
    (computed from the wall times only for an older service).
    """
    problems = []
    warning_age, critical_age = age_limits(data, limits)
    poll_age = _number(data, "poll_age")
    if poll_age is not None and poll_age > critical_age:
        problems.append((CRITICAL, f"the service's poll loop has not run for {poll_age:.0f} s "
                                   f"(> {_g(critical_age)} s)"))
    if age > critical_age:
        problems.append((CRITICAL, f"last reading {age:.0f} s old (> {_g(critical_age)} s)"))
    elif age > warning_age:
        problems.append((WARNING, f"last reading {age:.0f} s old (> {_g(warning_age)} s)"))
    fixed_time = _number(data, "fixed_time")
    if fixed_time is not None and limits.warning_fixed_age is not None:
        fixed_age = _number(data, "fixed_age")
        fixed_age = when + age - float(fixed_time) if fixed_age is None else float(fixed_age)
        if fixed_age > limits.warning_fixed_age:
            problems.append((WARNING, f"no fixed-time EA/EB from the meter for "
                                      f"{fixed_age / 60:.0f} min "
                                      f"(> {limits.warning_fixed_age / 60:g} min)"))
    return problems


def _link_problems(data: dict, limits: Limits) -> list:
    """The transmit-time limit, a session that is down, rejoins in the last hour."""
    problems = []
    if _flag(data, "rate_limited"):
        problems.append((WARNING, "transmit-time limit active, sends held (EVENT 32)"))
    if _flag(data, "session") is False:
        cause = _cause(data)
        problems.append((WARNING, "no session with the meter"
                         + (f" ({cause})" if cause else "")))
    rejoins = _number(data, "rejoins_last_hour")
    if rejoins is not None and limits.warning_rejoins is not None \
            and rejoins > limits.warning_rejoins:
        problems.append((WARNING, f"{rejoins} rejoin{'' if rejoins == 1 else 's'} in the "
                                  f"last hour (> {limits.warning_rejoins})"))
    return problems


def contract_limits(data: dict, limits: Limits) -> Limits:
    """
    The current thresholds not given, from the service's ampere contract
    (C{--tariff}): WARNING over its warning share, CRITICAL over the
    contract itself.  Pure.
    """
    warning, critical = _number(data, "contract_warning_a"), _number(data, "contract_a")
    return dataclasses.replace(
        limits,
        warning_current=(limits.warning_current if limits.warning_current is not None
                         else None if warning is None else float(warning)),
        critical_current=(limits.critical_current if limits.critical_current is not None
                          else None if critical is None else float(critical)))


def _load_problems(currents: list, power, limits: Limits) -> list:
    """Either phase's current, and the power bought, against their thresholds."""
    problems = []
    for phase, value in currents:
        if value is None:
            continue
        if limits.critical_current is not None and value > limits.critical_current:
            problems.append((CRITICAL, f"current {phase} {value} A "
                                       f"(> {_g(limits.critical_current)} A)"))
        elif limits.warning_current is not None and value > limits.warning_current:
            problems.append((WARNING, f"current {phase} {value} A "
                                      f"(> {_g(limits.warning_current)} A)"))
    if power is not None:
        if limits.critical_power is not None and power > limits.critical_power:
            problems.append((CRITICAL, f"power {power} W (> {_g(limits.critical_power)} W)"))
        elif limits.warning_power is not None and power > limits.warning_power:
            problems.append((WARNING, f"power {power} W (> {_g(limits.warning_power)} W)"))
    return problems


def _values(data: dict, currents: list, power, age: float) -> list:
    """The values the message ends with; absent ones left out, never shown as 0."""
    values = []
    if power is not None:
        values.append(f"{power} W")
    shown = [f"{phase} {amps_text(value)}" for phase, value in currents if value is not None]
    if shown:
        values.append(" / ".join(shown))
    values.append(f"age {age:.0f} s")
    held = data.get("held")
    if isinstance(held, str) and held and not _flag(data, "rate_limited"):
        values.append(f"held: {held}")
    return values


def interpret(status: int, body: bytes, now: float, limits: Limits = Limits()) -> tuple:
    """
    Judge the service's HTTP answer to C{GET /latest}.  Pure.

    503 with C{"no reading yet"} is CRITICAL (the service runs but has
    nothing to give, e.g. it cannot join the meter), with why its joins
    fail and the hold if the service names them; an answer that is not
    JSON, has no valid C{time} or comes with another status is UNKNOWN.

    @return: C{(status, message)}.
    """
    try:
        data = json.loads(body, parse_float=Decimal)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return UNKNOWN, f"the service did not answer with JSON (HTTP {status})"
    if status == 503 and isinstance(data, dict) and data.get("error"):
        message = str(data["error"])
        cause = _cause(data)
        if cause:
            message += f": {cause}"
        held = data.get("held")
        if isinstance(held, str) and held:
            message += f"; held: {held}"
        return CRITICAL, message
    if status != 200:
        why = data.get("error") if isinstance(data, dict) else None
        return UNKNOWN, f"unexpected HTTP {status} from the service" + (f" ({why})" if why else "")
    try:
        return evaluate(data, now, limits)
    except _Unreadable as e:
        return UNKNOWN, str(e)


def format_line(status: int, message: str) -> str:
    """
    The one output line: C{SmartMeter STATUS: message}, on one line and at
    most L{MAX_LINE} characters.
    """
    line = f"{NAME} {STATUS_NAMES[status]}: " + re.sub(r"\s+", " ", message).strip()
    if len(line) > MAX_LINE:
        line = line[:MAX_LINE - 3] + "..."
    return line


#: The value checks are the one table's (L{O}), as argparse types.
_non_negative = argparse_type(O.parse_seconds)
_threshold = argparse_type(O.parse_number)
_count = argparse_type(O.parse_count)


def build_parser() -> argparse.ArgumentParser:
    defaults = Limits()
    p = common.Parser(
        prog=PROGRAM, allow_abbrev=False,
        description="Mackerel check plugin: judge the running 'twist smartmeter' service "
                    "from its /latest (never opens the serial port). Prints one line "
                    "'SmartMeter <STATUS>: <message>'; exit 0 OK, 1 WARNING, 2 CRITICAL, "
                    "3 UNKNOWN.",
        epilog="A check that is switched off (no threshold given) never alarms. Values "
               "the meter did not report are left out of the message.")
    p.add_argument("--service", metavar="URL", default=common.DEFAULT_SERVICE,
                   help=f"the service's HTTP endpoint (default {common.DEFAULT_SERVICE}, "
                        "as twist smartmeter --http listens by default)")
    p.add_argument("-w", "--warning-age", dest="warning_age", type=_non_negative,
                   default=defaults.warning_age, metavar="SECONDS",
                   help="WARNING when the newest reading is older than this (default: "
                        "four of the service's polls, at least 120 s, as at its default 30 s "
                        "interval: more than one failed poll or a quick rejoin costs; "
                        "also the metric plugin's --max-age, so the graph gap and the "
                        "alert start together)")
    p.add_argument("-c", "--critical-age", dest="critical_age", type=_non_negative,
                   default=defaults.critical_age, metavar="SECONDS",
                   help="CRITICAL when the newest reading is older than this (default: "
                        "ten of the service's polls, at least 300 s: five minutes without "
                        "data is more than a rejoin or a replugged dongle costs the service)")
    p.add_argument("--warning-fixed-age", dest="warning_fixed_age", type=_non_negative,
                   default=defaults.warning_fixed_age, metavar="SECONDS",
                   help="WARNING when the meter's last half-hourly fixed-time EA/EB push "
                        f"is older than this (default {defaults.warning_fixed_age:g} = 70 min: "
                        "two pushes missed, with margin); no alarm while the service has "
                        "not seen one yet")
    p.add_argument("--warning-rejoins", dest="warning_rejoins", type=_count,
                   default=defaults.warning_rejoins, metavar="N",
                   help="WARNING when the service rejoined the meter more than N times in "
                        f"the last hour (default {defaults.warning_rejoins}; each join costs "
                        "air time of the 360 s per hour the module may transmit)")
    p.add_argument("--warning-current", dest="warning_current", type=_threshold,
                   metavar="AMPERES", help="WARNING when either phase (R or T) draws more: "
                   "an early warning before the breaker trips (default: the service's "
                   "--tariff contract's warning share, 90%% of it; else off)")
    p.add_argument("--critical-current", dest="critical_current", type=_threshold,
                   metavar="AMPERES", help="CRITICAL when either phase draws more "
                   "(default: the service's --tariff contract, if in amperes; else off)")
    p.add_argument("--warning-power", dest="warning_power", type=_threshold,
                   metavar="WATTS", help="WARNING when the power bought is above this "
                   "(default: off)")
    p.add_argument("--critical-power", dest="critical_power", type=_threshold,
                   metavar="WATTS", help="CRITICAL when the power bought is above this "
                   "(default: off)")
    p.add_argument("-t", "--timeout", type=_non_negative, default=10.0, metavar="SECONDS",
                   help="seconds to wait for the service's answer (default 10, well below "
                        "mackerel-agent's check timeout)")
    return p


def parse_args(argv) -> argparse.Namespace:
    """
    Parse and cross-check the command line; C{args.url} is the C{/latest}
    URL and C{args.limits} the L{Limits}.

    @raise common.UsageError: a bad command line.
    """
    args = build_parser().parse_args(argv)
    for warning, critical in (("warning_age", "critical_age"),
                              ("warning_current", "critical_current"),
                              ("warning_power", "critical_power")):
        w, c = getattr(args, warning), getattr(args, critical)
        if w is not None and c is not None and w > c:
            raise common.UsageError(f"--{warning.replace('_', '-')} ({w:g}) must not be above "
                                    f"--{critical.replace('_', '-')} ({c:g})")
    if args.timeout <= 0:
        raise common.UsageError("--timeout must be above 0")
    base = common.service_base(args.service)
    args.url = base if base.endswith("/latest") else base + "/latest"
    args.limits = Limits(**{f.name: getattr(args, f.name) for f in dataclasses.fields(Limits)})
    return args


def _usage_line() -> str:
    usage = re.sub(r"\s+", " ", build_parser().format_usage()).strip()
    return usage[len("usage: "):] if usage.startswith("usage: ") else usage


def check(argv, now: Callable[[], float] = time.time,
          fetch: Callable = common.fetch_service) -> tuple:
    """
    The whole check but the printing: parse, ask the service, judge.

    @return: C{(status, message)}.
    """
    try:
        args = parse_args(argv)
    except ArgumentError as e:
        return UNKNOWN, f"{e}; usage: {_usage_line()}"
    try:
        status, body = fetch(args.url, args.timeout)
    except TimeoutError:
        return CRITICAL, f"no answer from the service at {args.url} within {args.timeout:g} s"
    except OSError as e:
        return CRITICAL, f"cannot reach the service at {args.url} ({common.why_unreachable(e)})"
    result, message = interpret(status, body, now(), args.limits)
    if result == UNKNOWN:
        message += f" ({args.url})"
    return result, message


def run(argv, stdout=None, now: Callable[[], float] = time.time,
        fetch: Callable = common.fetch_service) -> int:
    """
    Run the check with C{argv}, print its one line on C{stdout}.

    @return: the exit status (0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN).
    """
    stdout = stdout or sys.stdout
    status, message = check(argv, now, fetch)
    stdout.write(format_line(status, message) + "\n")
    stdout.flush()
    return status


def main(argv=None) -> None:
    """Console-script entry point."""
    from smartmeter_tx.cli.common import run_blocking
    argv = sys.argv[1:] if argv is None else argv
    raise SystemExit(run_blocking(lambda: run(argv), PROGRAM))


if __name__ == "__main__":
    main()
