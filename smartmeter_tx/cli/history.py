"""
C{smartmeter-history}: the meter's own 30-minute record, for people without
the service: one row per slot, oldest first, as CSV (with a header row) or
JSON lines, with the field names of the data log's C{kind: history} records.

It reads the meter directly (the plugin's device and credential flags) or a
running C{twist smartmeter} (C{--service URL}), which serves what it logged.
Exit codes are the plugin's.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import io
import json
import os
import sys
from typing import Optional

from smartmeter_tx.cli import bill as B
from smartmeter_tx.cli import options as O
from smartmeter_tx.cli import common as C
from smartmeter_tx.cli import ha
from smartmeter_tx.cli.meteropts import (
    HA_OPTIONS, add_oneshot_options, add_to_parser, argparse_type,
)
from smartmeter_tx.errors import ArgumentError
from smartmeter_tx.model import parse_json_object

__all__ = ["main", "run", "parse_args", "COLUMNS"]

PROGRAM = "smartmeter-history"
#: The CSV columns: the slot's start, its energies and counters, the source.
COLUMNS = ("slot", "energy_normal_kwh", "energy_reverse_kwh", "cumulative_normal_kwh",
           "cumulative_reverse_kwh", "source")


def build_parser() -> argparse.ArgumentParser:
    p = C.Parser(
        prog=PROGRAM, allow_abbrev=False,
        description="Print the smart meter's own 30-minute record of energy bought and sold, "
                    "oldest slot first.",
        epilog=f"The B-route ID and password can come from ${O.ENV_ID} / ${O.ENV_PASSWORD} "
               "or --password-file instead of the command line.")
    opt = add_oneshot_options(p, "total time budget (default 30 s plus 5 s a day)")
    opt("days", type=argparse_type(O.parse_days), default=None, metavar="N",
        help="days before today to include (1-45; default 1: yesterday and today up to "
             "the last complete slot)")
    opt("format", choices=("csv", "jsonl", "json"), default="csv",
        help="output format (default csv; json is JSON lines, as jsonl)")
    opt("bill", action="store_true", help="print one row per billing period, priced under "
        "--tariff, instead of the slots")
    opt("tariff", metavar="FILE", help="the household's tariff (TOML; examples/tariffs)")
    opt("periods", type=int, default=2, metavar="N",
        help=f"with --bill: billing periods up to the current one (1-{B.MOST_PERIODS}; "
             "default 2)")
    opt("service", metavar="URL", help="read what a running 'twist smartmeter' logged "
        "instead of the serial port")
    add_to_parser(p, HA_OPTIONS)
    return p


def parse_args(argv):
    """@raise UsageError: a bad command line."""
    args = build_parser().parse_args(argv)
    args.tariff_data = None
    if args.bill:
        _bill_args(args)
    elif args.tariff and not args.ha_url:
        raise C.UsageError("--tariff needs --bill or --ha-url")
    elif args.tariff:
        from smartmeter_tx.bill.tariff import load_tariff
        args.tariff_data = load_tariff(args.tariff)
    if args.days is None:
        args.days = 1
    if args.timeout is None:
        args.timeout = 30.0 + 5.0 * args.days
    if args.debug:
        args.verbosity = 3
    if args.timeout <= 0:
        raise C.UsageError("--timeout must be positive")
    return args


def _bill_args(args) -> None:
    """
    Check --bill's options and read the tariff; the days of record it needs.

    @raise ArgumentError: a bad option or tariff (one line).
    """
    from smartmeter_tx.bill.tariff import load_tariff
    from smartmeter_tx.model import JST

    if not args.tariff:
        raise C.UsageError("--bill needs --tariff FILE")
    if args.days is not None or args.ha_url:
        raise C.UsageError(f"--bill takes neither {'--days' if args.days else '--ha-url'}: "
                           "the periods say which days")
    if not 1 <= args.periods <= B.MOST_PERIODS:
        raise C.UsageError(f"--periods must be 1 to {B.MOST_PERIODS}")
    args.tariff_data = load_tariff(args.tariff)
    args.days = B.days_for(args.tariff_data, datetime.datetime.now(JST), args.periods,
                           O.RECORD_DAYS)


def _print(records: list, args, stdout, stderr, modulus=None) -> None:
    """The slots, or with --bill the periods' bills."""
    if args.bill:
        B.write_bills(B.bills(args.tariff_data, records, args.periods, modulus), args.format,
                      stdout, stderr, PROGRAM)
    else:
        write_rows(records, args.format, stdout)


def write_rows(records: list, fmt: str, stdout) -> None:
    """The slots, oldest first, as CSV with a header row or as JSON lines."""
    records = sorted(records, key=lambda r: r["slot"])
    if fmt in ("json", "jsonl"):
        stdout.write("".join(json.dumps(r, sort_keys=True) + "\n" for r in records))
    else:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(COLUMNS)
        for r in records:
            writer.writerow(["" if r.get(c) is None else r.get(c) for c in COLUMNS])
        stdout.write(out.getvalue())
    stdout.flush()


class _Progress:
    """A progress line on stderr, only when stderr is a terminal."""

    def __init__(self, stream) -> None:
        self.stream = stream
        self.shown = bool(getattr(stream, "isatty", lambda: False)())

    def __call__(self, done: int, total: int) -> None:
        if self.shown and total:
            self.stream.write(f"\r{PROGRAM}: {done} of {total} slots read")
            self.stream.flush()

    def end(self) -> None:
        if self.shown:
            self.stream.write("\n")
            self.stream.flush()


async def run(reactor, argv, environ=os.environ, stdout=None, stderr=None) -> int:
    """
    The whole command.

    @return: the exit code.
    """
    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr
    try:
        args = parse_args(argv)
        args.ha_token = None
        if args.ha_url:
            args.ha_token = O.read_ha_token(args.ha_token_file, environ)
            ha.check_ready(args.ha_url, args.ha_token)
        if args.service:
            return await _from_service(reactor, args, stdout, stderr)
        O.require_device(args.device, ", or --service")
        rbid, password = O.read_secrets(args.id, args.password, args.password_file, environ)
    except ArgumentError as e:
        C.say(stderr, str(e), PROGRAM)
        return C.EXIT_USAGE
    return await _from_meter(reactor, args, rbid, password, environ, stdout, stderr)


async def _from_meter(reactor, args, rbid, password, environ, stdout, stderr) -> int:
    from smartmeter_tx.model import JST
    from smartmeter_tx.service.backfill import Backfill

    records: list = []
    progress = _Progress(stderr)

    async def work(client, budget, credentials, state_path):
        scale = await client.ensure_scale(budget)
        meter_now = await client.history.meter_clock(budget)
        if args.bill:
            # The periods are the meter's: the days they need, by its clock.
            args.days = min(O.RECORD_DAYS, B.days_for(
                args.tariff_data, meter_now.replace(tzinfo=JST), args.periods))
        # The service's backfill, with nothing logged yet and no pacing: the
        # user asked for it now (a day costs two frames, 45 days about 100).
        backfill = Backfill(args.days, reactor, lambda record, when: records.append(record),
                            reactor.seconds)
        total = len(backfill.due(meter_now))
        while True:
            budget.left("reading the meter's history")
            more = await backfill.step(client)
            progress(len(records), total)
            if not more:
                break
        progress.end()
        if args.ha_url:
            return await ha.import_records(reactor, args.ha_url, args.ha_token, records,
                                           client.link.mac, stdout, stderr, PROGRAM,
                                           args.tariff_data, scale.modulus_kwh)
        _print(records, args, stdout, stderr, scale.modulus_kwh)
        return C.EXIT_OK

    async def busy(error):
        # The service reads this dongle: its data log has the history.
        from twisted.internet import threads
        answer = await threads.deferToThreadPool(reactor, reactor.getThreadPool(),
                                                 C.ask_local_service, min(args.timeout, 3.0))
        C.say(stderr, C.busy_hint(error, answer, args.device.text), PROGRAM)
        return C.EXIT_DEVICE

    return await C.with_meter(reactor, args, rbid, password, environ, stderr, work, busy,
                              program=PROGRAM)


async def _from_service(reactor, args, stdout, stderr) -> int:
    from twisted.internet import threads

    # On a thread: the reactor may be the one serving the answer (tests run
    # the service in-process).
    if not args.ha_url:
        return await threads.deferToThreadPool(reactor, reactor.getThreadPool(),
                                               from_service_blocking, args, stdout, stderr)
    got: list = []
    code = await threads.deferToThreadPool(reactor, reactor.getThreadPool(),
                                           from_service_blocking, args, stdout, stderr, got)
    if code != C.EXIT_OK:
        return code
    slots, mac = got
    return await ha.import_records(reactor, args.ha_url, args.ha_token, slots, mac, stdout,
                                   stderr, PROGRAM, args.tariff_data)


def _service_mac(base: str, timeout: float) -> Optional[str]:
    """The MAC of the meter the service reads (its /latest), or C{None}."""
    try:
        status, body = C.fetch_service(base + "/latest", timeout)
    except OSError:
        return None
    mac = (parse_json_object(body) or {}).get("meter_mac")
    return mac if isinstance(mac, str) else None


def from_service_blocking(args, stdout, stderr, got: Optional[list] = None) -> int:
    """
    The --service path, without a reactor: print what the service logged
    for the days asked (or, given C{got}, put the slots and the meter's MAC
    there instead).

    @return: the exit code.
    """
    from urllib.parse import quote

    from smartmeter_tx.model import JST

    try:
        base = C.service_base(args.service)
    except C.UsageError as e:
        C.say(stderr, str(e), PROGRAM)
        return C.EXIT_USAGE
    today = datetime.datetime.now(JST).date()
    since = datetime.datetime.combine(today - datetime.timedelta(days=args.days),
                                      datetime.time(), JST)
    url = f"{base}/history?since={quote(since.isoformat())}"
    try:
        status, body = C.fetch_service(url, args.timeout)
    except TimeoutError:
        C.say(stderr, f"timed out while asking the service at {url}", PROGRAM)
        return C.EXIT_TIMEOUT
    except OSError as e:
        C.say(stderr, f"cannot reach the service at {url}: {C.why_unreachable(e)}", PROGRAM)
        return C.EXIT_DEVICE
    try:
        slots = json.loads(body)["slots"] if status == 200 else None
        if not isinstance(slots, list) or not all(
                isinstance(r, dict) and isinstance(r.get("slot"), str) for r in slots):
            raise ValueError
    except (ValueError, KeyError, TypeError, RecursionError):
        C.say(stderr, f"the service did not answer with its history ({status}; {url})",
              PROGRAM)
        return C.EXIT_NO_READING
    if got is not None:
        got.extend([slots, _service_mac(base, args.timeout)])
        return C.EXIT_OK
    _print(slots, args, stdout, stderr)
    return C.EXIT_OK


def main(argv=None) -> None:
    """Console-script entry point."""
    argv = sys.argv[1:] if argv is None else argv
    try:
        args = parse_args(argv)
    except ArgumentError as e:
        C.say(sys.stderr, str(e), PROGRAM)
        raise SystemExit(C.EXIT_USAGE)
    if args.service and not args.ha_url:
        # No reactor at all on this path: one GET, as in the plugin.
        raise SystemExit(C.run_blocking(
            lambda: from_service_blocking(args, sys.stdout, sys.stderr), PROGRAM))
    C.start_logging(args.verbosity, sys.stderr)
    C.react(lambda reactor: run(reactor, argv), PROGRAM)
